"""The NCCL all-to-all floor of Ulysses attention for Wan2.1-1.3B: the time of one all-to-all of a bf16
[L / n, 1536] shard (the size each of q, k, v and the output moves per block), and the implied cost per
forward (4 per block x 30 blocks), at 480p (L = 32,760) and 720p (L = 75,600), through torch.distributed.
Compare with the all_to_all share bench/parallel_step_bench reports.

Usage: torchrun --nproc_per_node N bench/device/nccl_all_to_all.py
"""
import time

import torch
import torch.distributed as dist

dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(rank)
for tokens in (32760, 75600):
    send = torch.randn(tokens // world * 1536, device="cuda", dtype=torch.bfloat16)
    recv = torch.empty_like(send)
    for _ in range(5):
        dist.all_to_all_single(recv, send)
    torch.cuda.synchronize()
    iterations = 50
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_to_all_single(recv, send)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iterations
    if rank == 0:
        print(f"{torch.cuda.get_device_name()} n={world} tokens={tokens}: all-to-all {seconds * 1e3:.3f} ms "
              f"({send.numel() * 2 / seconds / 1e9:.0f} GB/s per rank), x 4 per block x 30 blocks = "
              f"{seconds * 120 * 1e3:.1f} ms per forward")
dist.destroy_process_group()
