# Source with the prefix of bench/device/fetch_service_deps.sh: its programs (redis-server, redis-cli)
# and libraries (FFmpeg, x264, hiredis) come first.   . bench/device/service_env.sh PREFIX
export PATH="$1/bin:$PATH"
export LD_LIBRARY_PATH="$1/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$1/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# Open MPI's topology library (hwloc) dlopens plugins that link the OpenCL loader, libxml2 and X11 by
# soname, and through LD_LIBRARY_PATH it would find the prefix's stand-ins (prune_prefix.py), whose
# functions return 0 without filling their outputs. Keep hwloc off them (a worker under mpirun did
# not start on the device image with them reachable; see bench/device/README.md).
export HWLOC_PLUGINS_BLACKLIST=hwloc_opencl,hwloc_gl,hwloc_xml_libxml HWLOC_COMPONENTS=-opencl,-gl HWLOC_LIBXML=0
