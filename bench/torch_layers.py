"""PyTorch's time per operator over a few training steps of resnet20 (the peer of
`flopnet bench resnet20 --input 3x32x32 --classes 10 --batch 128`), grouped by input shape:
where flopnet's per-layer table is ahead of or behind the peer.

    /path/to/venv/bin/python bench/torch_layers.py --threads 2 --steps 5

Each row's "CPU time avg" is one call of that operator at that shape (e.g. one
convolution_backward of a 16-channel 3x3 layer at 32x32); compare it with the layer's
forward and backward columns of `flopnet bench`.
"""
import argparse, os, sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_peer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rows", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = torch_peer.cifar_resnet(20)
    x, y = torch.randn(a.batch, 3, 32, 32), torch.randint(0, 10, (a.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for _ in range(a.steps):
            step()
    print(p.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=40, max_shapes_column_width=60))


if __name__ == "__main__":
    main()
