"""Small-map convolutions as matmuls: the same numbers as F.conv2d, taken only where measured faster."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import get_model
from toolkit import engine
from toolkit.small_map_conv import (
    SmallMapConv2d,
    conv2d_as_matmul,
    use_small_map_convolutions,
)

# (input height, width, kernel, stride, padding, bias): square and not, strides that do not divide
GEOMETRIES = [
    (4, 4, (3, 3), (1, 1), (1, 1), False),  # SmallResNet18's last stage
    (8, 7, (3, 3), (2, 2), (1, 1), True),
    (8, 8, (1, 1), (2, 2), (0, 0), False),  # a projection shortcut
    (5, 6, (3, 1), (1, 2), (1, 0), True),
    (9, 9, (7, 7), (2, 2), (3, 3), True),  # torchvision's stem
    (1, 1, (3, 3), (1, 1), (1, 1), False),  # torchvision's ResNets at 32x32 end on 1x1 maps
]


@pytest.mark.parametrize("height, width, kernel, stride, padding, bias", GEOMETRIES)
def test_matmul_convolution_equals_conv2d_values_and_gradients(height, width, kernel, stride, padding, bias):
    torch.manual_seed(0)
    x = torch.randn(3, 4, height, width, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True) if bias else None
    inputs = [t for t in (x, weight, b) if t is not None]

    expected = F.conv2d(x, weight, b, stride, padding)
    got = conv2d_as_matmul(x, weight, b, stride, padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)

    grad_out = torch.randn_like(expected)
    for g, e in zip(torch.autograd.grad(got, inputs, grad_out), torch.autograd.grad(expected, inputs, grad_out)):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


def test_frozen_weight_gets_no_gradient_and_input_still_does():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 3, 3, 3, dtype=torch.float64)
    conv2d_as_matmul(x, weight, None, (1, 1), (1, 1)).sum().backward()
    expected, = torch.autograd.grad(F.conv2d(x, weight, None, 1, 1).sum(), x)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=1e-12)


def small_map_conv(in_channels=32, out_channels=48):
    torch.manual_seed(0)
    return use_small_map_convolutions(nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=True)))[0]


def test_cpu_bf16_on_a_4x4_map_takes_the_matmul_path_with_bf16_accuracy():
    conv = small_map_conv()
    x = torch.randn(8, 32, 4, 4).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv.takes_matmul_path(x)
        out = conv(x)
        direct = conv2d_as_matmul(x, conv.weight, conv.bias, conv.stride, conv.padding)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, direct)
    reference = F.conv2d(x, conv.weight, conv.bias, 1, 1)
    assert (out.float() - reference).abs().max() < 0.02 * reference.abs().max()


def test_bf16_weight_gradient_matches_fp32_within_bf16_rounding():
    conv = small_map_conv()
    x = torch.randn(8, 32, 4, 4).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x).float().square().sum().backward()
    got = conv.weight.grad.clone()
    conv.weight.grad = None
    F.conv2d(x, conv.weight, conv.bias, 1, 1).square().sum().backward()
    expected = conv.weight.grad
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() < 0.03 * expected.abs().max()


@pytest.mark.parametrize("size, autocast", [(8, True), (4, False)])
def test_larger_maps_and_fp32_stay_with_conv2d_bit_for_bit(size, autocast):
    conv = small_map_conv()
    x = torch.randn(4, 32, size, size)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert not conv.takes_matmul_path(x)
        assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, 1, 1))


@pytest.mark.parametrize("index", [9, 35])  # torchvision resnet18, SmallResNet18
def test_conversion_keeps_parameters_state_dict_and_fp32_outputs(index):
    torch.manual_seed(0)
    model = get_model.build_model(index, 7).eval().to(memory_format=torch.channels_last)
    parameters = list(model.parameters())
    state = model.state_dict()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    before = model(x)

    engine.prepare_model(model, torch.device("cpu"))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is SmallMapConv2d for m in convs)
    assert all(a is b for a, b in zip(model.parameters(), parameters))  # optimisers keep working
    after = model.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], state[k]) for k in state)
    assert torch.equal(model(x), before)


def test_grouped_convolutions_are_left_alone():
    model = use_small_map_convolutions(get_model.build_model(26, 7))  # mobilenet_v2: depthwise convs
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1]
    assert depthwise and all(type(m) is nn.Conv2d for m in depthwise)
    assert all(type(m) is SmallMapConv2d for m in convs if m.groups == 1)
