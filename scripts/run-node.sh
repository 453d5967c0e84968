#!/usr/bin/env bash
# Starts one local storage node with an ssd and an hdd disk under DATA_DIR,
# printing its endpoint and the cluster secret. Re-running reuses the data.
set -euo pipefail
data_dir=$(realpath -m "${1:-./chuyi-data}")
chuyi=${2:-chuyi}
mkdir -p "$data_dir"
secret_file="$data_dir/cluster.secret"
if [ ! -s "$secret_file" ]; then
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret_file"
	chmod 600 "$secret_file"
fi
config="$data_dir/node1.toml"
cat > "$config" <<TOML
node_id = 1
listen = "127.0.0.1:7101"
listen_extra = "unix:$data_dir/node1.sock"
cluster_secret_file = "$secret_file"
io_engine = "uring"

[[disk]]
id = 0
path = "$data_dir/node1/ssd0"
class = "ssd"
capacity = "2GiB"

[[disk]]
id = 1
path = "$data_dir/node1/hdd0"
class = "hdd"
capacity = "4GiB"
TOML
cat <<MSG
chuyi storage node 1
  chunk service : 127.0.0.1:7101 (and unix:$data_dir/node1.sock)
  cluster secret: $(cat "$secret_file")   (file: $secret_file)
  config        : $config
  try           : $chuyi disks --node 127.0.0.1:7101 --secret-file $secret_file
Ctrl-C stops the node; running again reuses $data_dir.
MSG
exec "$chuyi" node --config "$config"
