"""Convolutions with a small output map, computed as one matrix product on CPU in bf16.

oneDNN's bf16 convolution kernels are slow when the output map has few positions: the backward
pass of SmallResNet18's 512-channel convolutions on 4x4 maps runs at about 125 GFLOP/s on an
AMX CPU, against 400 and more for the same work on 16x16 maps, and torchvision's ResNets at
32x32 end on 1x1 and 2x2 maps where it is worse still. Gathering each output position's input
patch into one row (im2col) turns the convolution into a single large matmul, which the bf16
matmul kernels run several times faster (benchmarks/train_speed.py measures the whole effect).

SmallMapConv2d is an nn.Conv2d with the same parameters and state_dict; it takes the matmul
path only on CPU, in bf16, when the output has at most SMALL_MAP_POSITIONS positions (measured:
in fp32, and on 8x8 maps, oneDNN is as fast or faster), and calls nn.Conv2d otherwise.
"""
import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAP_POSITIONS = 16  # 4x4


def _windows(kernel_size, stride, out_size):
    """For each kernel offset (row, column): the slice of the padded NHWC input it reads."""
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, stride, out_size
    return [(slice(None), slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))
            for i in range(kh) for j in range(kw)]


class _ConvAsMatmul(torch.autograd.Function):
    """Convolution without bias, groups or dilation, as patches @ weight.T, with its own backward:
    autograd's backward of the patch gathering would fill and add a zero tensor per kernel offset."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        n, c, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        (sh, sw), (ph, pw) = stride, padding
        out_size = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # NHWC
        windows = _windows((kh, kw), stride, out_size)
        # rows: (image, out row, out column); columns: (kernel row, kernel column, channel)
        patches = torch.stack([padded[window] for window in windows], dim=3).view(-1, kh * kw * c)
        weight_matrix = weight.permute(0, 2, 3, 1).reshape(out_channels, kh * kw * c)
        ctx.save_for_backward(patches, weight_matrix)
        ctx.shapes = (x.shape, weight.shape, padded.shape, stride, padding, out_size)
        out = patches @ weight_matrix.t()
        return out.view(n, *out_size, out_channels).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        patches, weight_matrix = ctx.saved_tensors
        x_shape, weight_shape, padded_shape, stride, padding, out_size = ctx.shapes
        (n, c, h, w), (out_channels, _, kh, kw), (ph, pw) = x_shape, weight_shape, padding
        grad_rows = grad_out.permute(0, 2, 3, 1).reshape(-1, out_channels)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_patches = (grad_rows @ weight_matrix).view(n, *out_size, kh * kw, c)
            grad_padded = grad_out.new_zeros(padded_shape)
            for offset, window in enumerate(_windows((kh, kw), stride, out_size)):
                grad_padded[window] += grad_patches[:, :, :, offset]
            grad_x = grad_padded[:, ph:ph + h, pw:pw + w].permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_rows.t() @ patches).view(out_channels, kh, kw, c).permute(0, 3, 1, 2)
        return grad_x, grad_weight, None, None


def conv2d_as_matmul(x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
    """F.conv2d(x, weight, bias, stride, padding) for groups=1, dilation=1, zero padding,
    computed as patches @ weight.T; under autocast, in autocast's dtype."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        out = _ConvAsMatmul.apply(x, weight, tuple(stride), tuple(padding))
    return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class SmallMapConv2d(nn.Conv2d):
    """nn.Conv2d that computes small output maps on CPU in bf16 as one matmul (see the module)."""

    def takes_matmul_path(self, x: torch.Tensor) -> bool:
        # Not under torch.compile, which picks its own kernels: compiling SmallResNet18 with this
        # path inside ran past 10 minutes (PyTorch 2.15) against about a minute without it.
        if torch.compiler.is_compiling() or x.device.type != "cpu" or compute_dtype(x) != torch.bfloat16:
            return False
        (h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape[-2:], self.kernel_size, self.stride, self.padding
        return ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1) <= SMALL_MAP_POSITIONS

    def forward(self, x):
        if x.dim() == 4 and self.takes_matmul_path(x):
            return conv2d_as_matmul(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)


def can_run_as_matmul(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def use_small_map_convolutions(model: nn.Module) -> nn.Module:
    """Replace, in place, every plain nn.Conv2d the matmul path can compute by a SmallMapConv2d
    holding the same parameters (so state_dict, optimisers and checkpoints are unchanged)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if can_run_as_matmul(child):
                setattr(parent, name, small_map_copy(child))
    return model


def small_map_copy(conv: nn.Conv2d) -> SmallMapConv2d:
    copy = SmallMapConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=conv.bias is not None, device="meta")
    copy.weight, copy.bias = conv.weight, conv.bias
    return copy.train(conv.training)
