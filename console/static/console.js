// The console's one script: how old the page's survey is, ticking, and a
// reload every 10 s (the console surveys the cluster every 5 s). The pages
// work without it; they are only not refreshed.
(function () {
  for (const el of document.querySelectorAll(".age")) {
    const taken = Number(el.dataset.takenMs);
    const tick = () => {
      el.textContent = Math.max(0, Math.round((Date.now() - taken) / 1000)) + " s ago";
    };
    tick();
    setInterval(tick, 1000);
  }
  setTimeout(() => location.reload(), 10000);
})();
