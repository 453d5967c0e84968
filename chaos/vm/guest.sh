#!/bin/bash
# Builds the small Linux guest the vhost-user-blk tests and benchmarks boot
# (chaos/tests/vhost.rs, bench/vhost-vm.sh): Debian's kernel, and an
# initramfs of busybox, the kernel modules for virtio-pci, virtio-blk, ext4
# and fw_cfg, and mkfs.ext4, fio and blkdiscard with their libraries. The guest's
# /init runs the script QEMU passes as fw_cfg file opt/chuyi/test (without
# one, it lists its disks), prints its exit status as `CHUYI-GUEST-EXIT
# <n>` and powers off.
#
#   chaos/vm/guest.sh DIR   ->  DIR/vmlinuz, DIR/initrd.img
#
# Nothing is built when DIR already holds both for this script's version.
set -euo pipefail
dir=${1:?usage: guest.sh DIR}
version=4
mkdir -p "$dir"
if [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ] && [ "$(cat "$dir/version" 2>/dev/null)" = "$version" ]; then
	exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The kernel: whatever linux-image-amd64 depends on, unpacked, not installed.
package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$package" ] || { echo "guest.sh: no linux-image-amd64 in apt's lists (run apt-get update)" >&2; exit 1; }
(cd "$work" && apt-get download -q "$package" >/dev/null 2>&1) || { echo "guest.sh: apt-get download $package failed" >&2; exit 1; }
dpkg -x "$work"/linux-image-*.deb "$work/kernel"
release=$(ls "$work/kernel/lib/modules")
modules="$work/kernel/lib/modules/$release/kernel"

root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,mnt,tmp,lib/modules,etc,usr/local/bin}
cp /bin/busybox "$root/bin/busybox"

# Modules in load order: each one's dependencies (its .modinfo `depends=`)
# before it.
declare -A loaded=()
order=()
path_of() { find "$modules" -name "$1.ko" | head -1; }
load() {
	local name=${1//-/_} file deps dep
	[ -n "${loaded[$name]:-}" ] && return
	file=$(path_of "$name")
	[ -z "$file" ] && file=$(path_of "${name//_/-}")
	[ -n "$file" ] || { echo "guest.sh: module $name not found" >&2; exit 1; }
	loaded[$name]=1
	deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$file" | head -1 | cut -d= -f2)
	for dep in ${deps//,/ }; do load "$dep"; done
	cp "$file" "$root/lib/modules/"
	order+=("$(basename "$file")")
}
for m in virtio_pci virtio_blk crc32c_generic ext4 qemu_fw_cfg; do load "$m"; done
printf '%s\n' "${order[@]}" > "$root/lib/modules/order"

# Programs with their shared libraries, at the paths the loader looks in;
# in /usr/local/bin, ahead of busybox's applets of the same names.
for program in /sbin/mke2fs /usr/bin/fio /usr/sbin/blkdiscard; do
	cp "$program" "$root/usr/local/bin/"
	for lib in $(ldd "$program" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
done
ln -sf mke2fs "$root/usr/local/bin/mkfs.ext4"

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m || echo "insmod $m failed"; done
test=/sys/firmware/qemu_fw_cfg/by_name/opt/chuyi/test/raw
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /dev/vda ] && break; sleep 0.2; done
if [ -r $test ]; then
	cp $test /test.sh
	sh -e /test.sh
	echo "CHUYI-GUEST-EXIT $?"
else
	echo "the guest's disks:"
	cat /proc/partitions
	echo "CHUYI-GUEST-EXIT no test script"
fi
sync
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$dir/initrd.img.new"
cp "$work/kernel/boot/vmlinuz-$release" "$dir/vmlinuz"
mv "$dir/initrd.img.new" "$dir/initrd.img"
echo "$version" > "$dir/version"
