"""Keeps, from a tree of unpacked Debian packages, only the shared libraries that the service's
FFmpeg, hiredis and redis-server need at run time (their DT_NEEDED closure), beside the headers,
pkg-config files and programs, and makes the pkg-config files relocatable (prefix = their own folder's grandparent).

Usage: python3 prune_prefix.py STAGE PREFIX
Libraries any Ubuntu 24.04 image has (glibc, libstdc++, zlib, xz, bzip2, zstd) are left out.

Debian's FFmpeg links some fifty codec, network and hardware libraries (160 MiB with their own
dependencies) that the service never calls: it encodes H.264 through libx264 into MP4 files and reads
them back. Those libraries are replaced by stubs: a shared library with the same soname, version nodes
and exported symbols, whose functions return 0 and whose data symbols are zeroed storage. The dynamic
loader is satisfied, and FFmpeg's codec registry, which asks some wrapped libraries for their version
and capabilities when it is first searched, sees a library with no capabilities. Encoding or decoding
with one of those codecs would fail; the service only uses libx264 and FFmpeg's own H.264 decoder.
"""
import os, re, shutil, subprocess, sys

stage, prefix = sys.argv[1], sys.argv[2]
LIBDIR = "usr/lib/x86_64-linux-gnu"
SYSTEM = re.compile(r"^(libc|libm|libdl|libpthread|librt|libresolv|libutil|ld-linux-x86-64|libstdc\+\+|libgcc_s|"
                    r"libz|liblzma|libbz2|libzstd|libcrypt)\.so")
ROOTS = ["libavcodec.so.59", "libavformat.so.59", "libavutil.so.57", "libswscale.so.6", "libswresample.so.4",
         "libhiredis.so.0.14"]
PROGRAMS = ["redis-server", "redis-cli"]
# The real libraries kept: FFmpeg itself, x264, hiredis and what redis-server needs.
REAL = re.compile(r"^(libav(codec|format|util)|libsw(scale|resample)|libx264|libhiredis|libatomic|liblzf|libjemalloc|"
                  r"libsystemd|libssl|libcrypto|libcap|libgcrypt|libgpg-error|liblz4|"
                  # The real OpenCL ICD loader (libc only, 0.1 MiB): other programs' plugins (hwloc's)
                  # call it, and with no ICD installed it answers "no platform" properly.
                  r"libOpenCL)\.so")

def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)

def find_lib(name):
    for d in (os.path.join(stage, LIBDIR), os.path.join(stage, "lib/x86_64-linux-gnu")):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None

keep, missing, todo = {}, set(), list(ROOTS)
todo += [n for prog in PROGRAMS for n in needed(os.path.join(stage, "usr/bin", prog))]
while todo:
    name = todo.pop()
    if name in keep or SYSTEM.match(name):
        continue
    path = find_lib(name)
    if path is None:
        missing.add(name)
        continue
    keep[name] = path
    if REAL.match(name):
        todo += needed(path)
if missing:
    sys.exit("not in the unpacked packages (add their package): " + " ".join(sorted(missing)))

shutil.rmtree(prefix, ignore_errors=True)
os.makedirs(os.path.join(prefix, "lib/pkgconfig"))
os.makedirs(os.path.join(prefix, "bin"))
# Stub functions whose callers in FFmpeg use the result without a NULL check when probing files.
STUB_RESULTS = {"gme_identify_header": '(long)""'}  # libgme's probe reads *result: "" = not a gme file


def write_stub(name, real_path, out_path, workdir):
    """A library with `real_path`'s soname, version nodes and dynamic symbols, and no behaviour."""
    syms = subprocess.run(["readelf", "--wide", "--dyn-syms", real_path], capture_output=True, text=True,
                          check=True).stdout
    by_version, lines = {}, []
    for row in syms.splitlines():
        f = row.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(f) < 8 or not f[0].endswith(":") or f[6] in ("UND", "ABS") or f[4] not in ("GLOBAL", "WEAK"):
            continue
        kind, size, full = f[3], int(f[2], 0), f[7]
        sym, _, version = full.partition("@@") if "@@" in full else (full.split("@")[0], "", "")
        if "@" in full and "@@" not in full:
            continue  # an old, non-default version: nothing links against it
        if kind == "FUNC" or kind == "IFUNC":
            lines.append(f"long {sym}(void) {{ return {STUB_RESULTS.get(sym, '0')}; }}")
        elif kind == "OBJECT":
            lines.append(f"char {sym}[{max(size, 1)}];")
        elif kind == "TLS":
            lines.append(f"__thread char {sym}[{max(size, 1)}];")
        else:
            continue
        by_version.setdefault(version, []).append(sym)
    src = os.path.join(workdir, name + ".c")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    script = os.path.join(workdir, name + ".map")
    versions = [v for v in by_version if v]
    cmd = ["gcc", "-shared", "-fPIC", "-w", "-o", out_path, src, "-Wl,-soname," + name]
    if versions:
        # Unversioned symbols join the first node: an unversioned reference binds to any default version.
        by_version.setdefault(versions[0], []).extend(by_version.pop("", []))
        with open(script, "w") as f:
            for version in versions:
                f.write(version + " { global: " + " ".join(n + ";" for n in by_version[version]) + " };\n")
        cmd.append("-Wl,--version-script=" + script)
    subprocess.run(cmd, check=True)

import tempfile
workdir = tempfile.mkdtemp()
stubs = 0
for name, path in keep.items():
    if REAL.match(name):
        shutil.copy(os.path.realpath(path), os.path.join(prefix, "lib", name))
    else:
        write_stub(name, path, os.path.join(prefix, "lib", name), workdir)
        stubs += 1
shutil.rmtree(workdir)
# Development links and headers for the libraries the build links.
for dev, soname in [("libavcodec", "libavcodec.so.59"), ("libavformat", "libavformat.so.59"),
                    ("libavutil", "libavutil.so.57"), ("libswscale", "libswscale.so.6"),
                    ("libswresample", "libswresample.so.4"), ("libhiredis", "libhiredis.so.0.14")]:
    os.symlink(soname, os.path.join(prefix, "lib", dev + ".so"))
# Debian keeps FFmpeg's headers under include/<triplet>/; the prefix has one flat include folder.
shutil.copytree(os.path.join(stage, "usr/include"), os.path.join(prefix, "include"))
triplet = os.path.join(prefix, "include", "x86_64-linux-gnu")
if os.path.isdir(triplet):
    for entry in os.listdir(triplet):
        shutil.move(os.path.join(triplet, entry), os.path.join(prefix, "include", entry))
    os.rmdir(triplet)
for prog in PROGRAMS:
    shutil.copy(os.path.join(stage, "usr/bin", prog), os.path.join(prefix, "bin", prog))
pcdir = os.path.join(stage, LIBDIR, "pkgconfig")
for pc in os.listdir(pcdir):
    with open(os.path.join(pcdir, pc)) as f:
        text = f.read()
    # Relocatable: the prefix travels to another machine and folder.
    text = re.sub(r"^prefix=.*$", "prefix=${pcfiledir}/../..", text, flags=re.M)
    text = re.sub(r"^libdir=.*$", "libdir=${prefix}/lib", text, flags=re.M)
    text = re.sub(r"^includedir=.*$", "includedir=${prefix}/include", text, flags=re.M)
    with open(os.path.join(prefix, "lib/pkgconfig", pc), "w") as f:
        f.write(text)
size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(prefix) for f in fs
           if not os.path.islink(os.path.join(r, f)))
print(f"{prefix}: {len(keep) - stubs} libraries and {stubs} stubs, {size / 2**20:.1f} MiB")
