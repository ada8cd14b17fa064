"""GPU proxy: where do sparse kernels beat dense matmul on a GPU? (PyTorch, not keras-rigl)

keras-rigl's own kernel benchmark (`benchmarks/sparse_kernels.py`) needs
TensorFlow, which the project's GPU machine does not have (and cannot receive:
the TensorFlow wheel is far larger than what can be carried there). This
script asks the same question with the GPU libraries TensorFlow's sparse ops
are built on: cuSPARSE (CSR SpMM, what `tf.raw_ops.SparseMatrixMatMul` calls)
against cuBLAS dense GEMM, and the gather + scatter-add formulation
(`index_add_`, like `unsorted_segment_sum`). One layer y = x @ W, W [n, n] at
sparsity s, x [batch, n], float32; forward, and forward + backward (gradients
for x and for the stored values). Median of CUDA-event timings.

  python3 benchmarks/gpu_sparse_proxy_torch.py            # about a minute on an H200
"""

import argparse
import statistics

import torch


def timed(fn, repeats):
  for _ in range(3):
    fn()
  torch.cuda.synchronize()
  times = []
  for _ in range(repeats):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(end))
  return statistics.median(times)


def layer(n, sparsity, batch, repeats, device):
  nnz = n * n - int(sparsity * n * n)
  flat = torch.randperm(n * n, device=device)[:nnz]
  rows, cols = flat // n, flat % n
  values = torch.randn(nnz, device=device, requires_grad=True)
  x = torch.randn(batch, n, device=device, requires_grad=True)
  dense_w = torch.zeros(n * n, device=device)
  dense_w[flat] = values.detach()
  dense_w = dense_w.view(n, n).requires_grad_(True)
  result = {}

  def dense_fwd():
    return x @ dense_w

  def dense_fb():
    (x @ dense_w).sum().backward()

  # CSR of W^T, so that y^T = W^T x^T is a sparse @ dense product.
  order = torch.argsort(cols * n + rows)
  csr_rows, csr_cols = cols[order], rows[order]
  crow = torch.zeros(n + 1, dtype=torch.int64, device=device)
  crow[1:] = torch.cumsum(torch.bincount(csr_rows, minlength=n), 0)

  def csr_fwd():
    w_t = torch.sparse_csr_tensor(crow, csr_cols, values[order], (n, n))
    return (w_t @ x.t()).t()

  def csr_fb():
    csr_fwd().sum().backward()

  def gather_fwd():
    out = torch.zeros(batch, n, device=device)
    return out.index_add(1, cols, x[:, rows] * values)

  def gather_fb():
    gather_fwd().sum().backward()

  for name, fn in (("dense fwd", dense_fwd), ("dense fwd+bwd", dense_fb),
                   ("cusparse csr fwd", csr_fwd), ("cusparse csr fwd+bwd", csr_fb),
                   ("gather+index_add fwd", gather_fwd),
                   ("gather+index_add fwd+bwd", gather_fb)):
    try:
      with torch.no_grad() if name.endswith("fwd") else torch.enable_grad():
        result[name] = timed(fn, repeats)
    except RuntimeError as error:  # e.g. no backward for a sparse op
      result[name] = f"n/a ({str(error).splitlines()[0][:60]})"
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="4096,16384")
  parser.add_argument("--batches", default="1,32,256")
  parser.add_argument("--sparsities", default="0.9,0.95,0.98,0.99,0.999")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  if not torch.cuda.is_available():
    raise SystemExit("No CUDA device: this proxy is for the GPU machine only.")
  print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"float32, median of {args.repeats}, times in ms")
  print("| n | batch | sparsity | dense fwd | csr fwd | gather fwd | dense f+b | csr f+b | gather f+b |")
  print("|---|---|---|---|---|---|---|---|---|")
  for n in map(int, args.sizes.split(",")):
    for batch in map(int, args.batches.split(",")):
      for sparsity in map(float, args.sparsities.split(",")):
        r = layer(n, sparsity, batch, args.repeats, "cuda")
        fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else v
        print(f"| {n} | {batch} | {sparsity:.3f} | " + " | ".join(
            fmt(r[k]) for k in ("dense fwd", "cusparse csr fwd", "gather+index_add fwd",
                                "dense fwd+bwd", "cusparse csr fwd+bwd",
                                "gather+index_add fwd+bwd")) + " |", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
  main()
