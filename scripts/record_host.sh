#!/usr/bin/env bash
# Record this host's static and dynamic traces (all four host targets: local/cpu/fp32,
# local/cpu/int8, edge/cpu/fp32, cloud/cpu/fp32), fit the host profile and check the gap.
# Run it on a quiet machine (docs/own-device.md, section B): the recordings run one after the
# other, never in parallel (the other recording would be foreign load to each), and `uptime`
# before and after each says whether anything else ran.
#
#   scripts/record_host.sh [OUT_DIR]          # default runs/host
#   REQUESTS=520 scripts/record_host.sh       # requests per setting (default 260)
#   AUTOSCALE="python -m autoscale_env" scripts/record_host.sh   # without the installed command
set -euo pipefail
out=${1:-runs/host}
requests=${REQUESTS:-260}
autoscale=${AUTOSCALE:-autoscale}
mkdir -p "$out"
for setting in static dynamic; do
    uptime | tee -a "$out/uptime.txt"
    OMP_NUM_THREADS=1 $autoscale record --backend live --device host --scenario non_streaming \
        --setting "$setting" --requests "$requests" --seed 0 --batch-size 10 \
        --option start_timeout_s=900 --out "$out/live-host-non_streaming-$setting.csv.gz"
    uptime | tee -a "$out/uptime.txt"
done
$autoscale calibrate --trace "$out/live-host-non_streaming-dynamic.csv.gz" \
    --trace "$out/live-host-non_streaming-static.csv.gz" --out "$out/host.toml" --name host
$autoscale gap --trace "$out/live-host-non_streaming-dynamic.csv.gz" \
    --trace "$out/live-host-non_streaming-static.csv.gz" --profile "$out/host.toml" --out "$out/gap"
