# Source with the prefix of bench/device/fetch_service_deps.sh: its programs (redis-server, redis-cli)
# and libraries (FFmpeg, x264, hiredis) come first.   . bench/device/service_env.sh PREFIX
export PATH="$1/bin:$PATH"
export LD_LIBRARY_PATH="$1/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$1/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
