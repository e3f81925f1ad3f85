"""Summarizes `ncu --csv --metrics gpu__time_duration.sum` outputs: GPU time per kernel class (GEMM,
attention, normalization, elementwise/other) and the largest kernels, side by side for each file.

Usage: python3 ncu_summary.py LABEL=FILE.csv [LABEL=FILE.csv ...]
"""
import collections, csv, io, sys


def kernel_class(name):
    n = name.lower()
    if any(k in n for k in ("flash", "fmha", "attention", "sdpa")):
        return "attention"
    if any(k in n for k in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_")):
        return "gemm"
    if "norm" in n:
        return "norm"
    if any(k in n for k in ("elementwise", "vectorized", "unrolled", "reduce", "copy", "cat", "index")):
        return "elementwise/reduce/copy"
    return "other"


def load(path):
    text = open(path, errors="replace").read()
    start = text.find('"ID"')
    rows = csv.DictReader(io.StringIO(text[start:])) if start >= 0 else []
    per_kernel = collections.Counter()
    count = collections.Counter()
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        ns = float(r["Metric Value"].replace(",", ""))
        per_kernel[r["Kernel Name"]] += ns
        count[r["Kernel Name"]] += 1
    return per_kernel, count


for arg in sys.argv[1:]:
    label, path = arg.split("=", 1)
    per_kernel, count = load(path)
    total = sum(per_kernel.values())
    print(f"== {label}: {sum(count.values())} kernel launches, {total / 1e6:.2f} ms GPU time")
    classes = collections.Counter()
    launches = collections.Counter()
    for k, ns in per_kernel.items():
        classes[kernel_class(k)] += ns
        launches[kernel_class(k)] += count[k]
    for c, ns in classes.most_common():
        print(f"   {c:<26} {ns / 1e6:9.2f} ms  {100 * ns / max(total, 1):5.1f}%  {launches[c]:5d} launches")
    print("   largest kernels:")
    for k, ns in per_kernel.most_common(12):
        print(f"     {ns / 1e6:8.2f} ms x{count[k]:<4d} {k[:110]}")
