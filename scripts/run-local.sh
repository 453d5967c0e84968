#!/usr/bin/env bash
# The local all-in-one cluster: one metadata member and one storage node
# (an ssd and an hdd disk) under DATA_DIR, the node registered with the
# member and heartbeating. Prints the endpoints, the secret and commands to
# try. Re-running reuses the data. Ctrl-C stops both.
set -euo pipefail
data_dir=$(realpath -m "${1:-./chuyi-data}")
chuyi=${2:-chuyi}
mkdir -p "$data_dir"
secret_file="$data_dir/cluster.secret"
if [ ! -s "$secret_file" ]; then
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret_file"
	chmod 600 "$secret_file"
fi
meta_addr=127.0.0.1:7201
meta_config="$data_dir/meta1.toml"
cat > "$meta_config" <<TOML
id = 1
listen = "$meta_addr"
data_dir = "$data_dir/meta1"
cluster_secret_file = "$secret_file"

[[member]]
id = 1
addr = "$meta_addr"
TOML
config="$data_dir/node1.toml"
cat > "$config" <<TOML
node_id = 1
listen = "127.0.0.1:7101"
listen_extra = "unix:$data_dir/node1.sock"
cluster_secret_file = "$secret_file"
io_engine = "uring"
meta = ["$meta_addr"]
failure_domain = "local"

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
# A client config, so admin commands find the cluster with --config.
cat > "$data_dir/chuyi.toml" <<TOML
meta = ["$meta_addr"]
cluster_secret_file = "$secret_file"
TOML

"$chuyi" meta --config "$meta_config" &
meta_pid=$!
trap 'kill $meta_pid 2>/dev/null; wait' EXIT INT TERM
cat <<MSG
chuyi local cluster
  metadata      : $meta_addr (member 1; config $meta_config)
  storage node 1: 127.0.0.1:7101 (and unix:$data_dir/node1.sock)
  cluster secret: $(cat "$secret_file")   (file: $secret_file)
  try           : export CHUYI_CONFIG=$data_dir/chuyi.toml
                  $chuyi status
                  $chuyi pool create ssd --class ssd --replicas 1 --pg-count 32
                  $chuyi user create alice
                  $chuyi disks --node 127.0.0.1:7101 --secret-file $secret_file
Ctrl-C stops both; running again reuses $data_dir.
MSG
"$chuyi" node --config "$config"
