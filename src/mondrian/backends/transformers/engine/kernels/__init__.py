"""Triton kernels for the fast path's decode step (CUDA), one module per kernel, each
beside the torch reference it must equal (tests/backends/test_kernels.py runs them on the
CPU under `TRITON_INTERPRET=1`; tests/gpu/test_kernels_cuda.py on a GPU):

- norm_linear.py: RMSNorm fused into the projection that follows it (q/k/v): the
  normalised row never goes to memory, and the norm is not a kernel of its own;
- rope_kv.py: rotary embedding of q and k and the K/V cache write, one kernel for what
  was a rotation per tensor and two index copies;
- decode_attention.py: split-KV decode attention (flash-decoding): the cache's filled part
  is cut into splits spread over the GPU, each reduced with an online softmax, and the
  partial results combined;
- decode.py: which of them a decode step uses (`DecodeKernels`), after checking each
  against its reference on the device it will run on.

Nothing here is imported unless the fast path runs with kernels on (a CUDA device and
Triton installed): `import mondrian` loads no Triton.
"""
