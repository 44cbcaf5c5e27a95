"""Attention of one new token over a KV cache, as a Triton kernel for CUDA.

Dao, Haziza, Massa and Sizov (2023), "Flash-Decoding for long-context inference"; the online
softmax of Milakov and Gimelshein (2018), "Online normalizer calculation for softmax".

At decode time each (row, head) has one query against its own cache of up to N keys. The fused
SDPA kernels tile 64-128 query rows, so for one real row they do that much wasted arithmetic;
batched matmuls (cuBLAS with M = 1) waste tile work the same way. Here one program per
(row, head) streams its keys and values once, in blocks of `BLOCK`, with a running max and sum,
so the step is bound by reading the cache and nothing else. Triton is imported only when the
kernel is first used: CPU installs never need it.
"""

from __future__ import annotations

import math

import torch


def _build():
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(q, k, v, o, keep, n_keys, scale,
               sqb, sqh, skb, skh, skn, svb, svh, svn, sob, soh, smb,
               D: tl.constexpr, BLOCK: tl.constexpr, MASKED: tl.constexpr):
        b, h = tl.program_id(0), tl.program_id(1)
        d = tl.arange(0, D)
        qv = tl.load(q + b * sqb + h * sqh + d).to(tl.float32) * scale
        # a finite floor, not -inf: a block with every key masked must not give inf - inf
        m = -1e30
        s_sum = 0.0
        acc = tl.zeros((D,), tl.float32)
        for start in tl.range(0, n_keys, BLOCK):
            n = start + tl.arange(0, BLOCK)
            inside = n < n_keys
            kb = tl.load(k + b * skb + h * skh + n[:, None] * skn + d[None, :], mask=inside[:, None], other=0.0)
            s = tl.sum(kb.to(tl.float32) * qv[None, :], 1)
            if MASKED:
                inside = inside & (tl.load(keep + b * smb + n, mask=inside, other=0) != 0)
            s = tl.where(inside, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 0))
            p = tl.exp(s - m_new)
            alpha = tl.exp(m - m_new)
            vb = tl.load(v + b * svb + h * svh + n[:, None] * svn + d[None, :], mask=inside[:, None], other=0.0)
            acc = acc * alpha + tl.sum(p[:, None] * vb.to(tl.float32), 0)
            s_sum = s_sum * alpha + tl.sum(p, 0)
            m = m_new
        tl.store(o + b * sob + h * soh + d, (acc / s_sum).to(o.dtype.element_ty))

    return kernel


_kernel = None
# keys per block and warps per program: `python -m experiments.bench.serving_gpu --sweep` times
# the choices. On an H200 (bf16, head dim 64, 112 keys, batch 16384) one warp on 16 keys read
# the cache at 4.30 TB/s, its copy bandwidth; 4 warps on 64 keys at 3.09
BLOCK, NUM_WARPS = 16, 1


def decode_attention(q, k, v, keep=None, block: int | None = None, num_warps: int | None = None):
    """q [B, H, 1, D]; k, v [B, H, n, D] (views of a cache: any strides with a unit last one);
    keep [B, n] bool or None (which keys may be attended). Returns [B, H, 1, D]."""
    global _kernel
    if _kernel is None:
        _kernel = _build()
    B, H, _, D = q.shape
    n = k.shape[2]
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("decode_attention needs a unit stride on the head dimension")
    # written as [B, 1, H, D] so that merging the heads back is a view
    o = torch.empty(B, 1, H, D, dtype=q.dtype, device=q.device)
    if keep is None:
        keep_arg, smb = q, 0  # not read: MASKED is off
    else:
        keep_arg, smb = keep.view(torch.uint8), keep.stride(0)
    _kernel[(B, H)](q, k, v, o, keep_arg, n, 1.0 / math.sqrt(D),
                    q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
                    v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(2), smb,
                    D=D, BLOCK=block or BLOCK, MASKED=keep is not None, num_warps=num_warps or NUM_WARPS)
    return o.transpose(1, 2)
