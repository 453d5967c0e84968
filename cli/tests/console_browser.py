"""Drives the web console in headless Chromium (Debian's chromium and
chromium-driver, through selenium), as an administrator would.

    console_browser.py URL OUT NAME [--bad-login] PATH...

Logs in with $CHUYI_CONSOLE_ACCESS_KEY and $CHUYI_CONSOLE_SECRET_KEY
(first with a wrong secret key when --bad-login is given), opens each PATH,
saves OUT/NAME-<page>.png, and prints JSON: the login's outcome and each
page's final URL, title, visible text and HTML.
"""
import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def log_in(driver, url, access_key, secret_key):
    driver.get(url + "login")
    driver.find_element(By.ID, "access_key").send_keys(access_key)
    driver.find_element(By.ID, "secret_key").send_keys(secret_key)
    form = driver.find_element(By.ID, "login")
    driver.find_element(By.ID, "submit").click()
    # The POST's answer has loaded once the form page is gone.
    WebDriverWait(driver, 30).until(lambda d: not d.find_elements(By.ID, "login") or _stale(form))
    problems = driver.find_elements(By.ID, "problem")
    return problems[0].text if problems else None


def _stale(element):
    try:
        element.is_enabled()
        return False
    except Exception:
        return True


def main():
    url, out, name = sys.argv[1:4]
    rest = sys.argv[4:]
    bad_login = "--bad-login" in rest
    paths = [p for p in rest if p != "--bad-login"]
    access_key = os.environ["CHUYI_CONSOLE_ACCESS_KEY"]
    secret_key = os.environ["CHUYI_CONSOLE_SECRET_KEY"]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # chuyi up's certificate is self-signed (curl checks it in the test).
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1100", "--ignore-certificate-errors"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    result = {"pages": {}}
    try:
        if bad_login:
            result["bad_login_problem"] = log_in(driver, url, access_key, secret_key + "x")
            driver.get(url)
            result["bad_login_then"] = driver.current_url
        result["login_problem"] = log_in(driver, url, access_key, secret_key)
        result["after_login"] = driver.current_url
        for path in paths:
            driver.get(url + path.lstrip("/"))
            page = path.strip("/") or "overview"
            driver.save_screenshot(os.path.join(out, f"{name}-{page}.png"))
            result["pages"][path] = {
                "url": driver.current_url,
                "title": driver.title,
                "text": driver.find_element(By.TAG_NAME, "body").text,
                "html": driver.page_source,
            }
    finally:
        driver.quit()
    print(json.dumps(result))


main()
