"""The resource meter against tensors of known size."""

import torch
from torch import nn

from leanvision.engine.meter import ResourceMeter, SavedTensorMeter, count_parameters, state_bytes


def test_saved_tensor_peak_counts_each_storage_once_and_excludes_parameters():
    lin = nn.Linear(100, 100)
    x = torch.randn(50, 100, requires_grad=True)
    with SavedTensorMeter(lin) as m:
        y = torch.relu(lin(x))  # linear saves x (50x100 fp32), relu saves y
        z = (y * y).sum()  # saves y twice: same storage, counted once
        assert m.current == 2 * 50 * 100 * 4
        z.backward()
    assert m.peak_bytes == 40_000
    assert m.current == 0  # the graph is freed after backward, and so is the count


def test_saved_tensor_peak_follows_freed_graphs():
    w = torch.randn(256, 256, requires_grad=True)
    with SavedTensorMeter() as m:
        for _ in range(3):  # three sequential graphs, each freed before the next: peak is one graph
            a = torch.randn(64, 256)
            (a @ w).sum().backward()
    # a (64x256) is saved for w's gradient; w itself is a leaf saved for a's (not needed) side
    assert m.peak_bytes <= 2 * (64 * 256 * 4 + 256 * 256 * 4)
    assert m.peak_bytes >= 64 * 256 * 4


def test_count_parameters_counts_shared_tensors_once():
    a = nn.Linear(10, 10)
    seq = nn.Sequential(a, a)  # the same module twice
    assert count_parameters(seq) == 110
    a.bias.requires_grad_(False)
    assert count_parameters(seq, trainable_only=True) == 100


def test_state_bytes_include_grads_and_momentum():
    lin = nn.Linear(10, 10)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    lin(torch.randn(2, 10)).sum().backward()
    opt.step()
    b = state_bytes(lin, opt)
    assert b == {"params": 440, "buffers": 0, "grads": 440, "optimizer": 440}


def test_resource_meter_phases():
    lin = nn.Linear(32, 32)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    meter = ResourceMeter(lin, "cpu", warmup=1, track_steps=1)
    calls = []

    def step():
        calls.append(1)
        opt.zero_grad()
        lin(torch.randn(8, 32)).relu().sum().backward()
        opt.step()

    for _ in range(4):
        meter.measure(step, 8, opt)
    s = meter.stats()
    assert len(calls) == 4 and meter.timed_steps == 2  # 1 warm-up, 1 tracked, 2 timed
    assert s.activation_peak_bytes == 8 * 32 * 4 * 2  # linear input and relu output
    assert s.peak_memory_bytes == s.activation_peak_bytes + s.state_bytes
    assert s.trainable_params == 32 * 33 and s.images_per_s > 0
