"""Convolutions inside automatic leaves (untraceable submodules) are converted as sub-networks of their own."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import octify
from octify.layers import OctConv2d


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.bn(self.conv1(x))))


class Gate(nn.Module):
    """Reads a value to choose its path, so torch.fx cannot trace it; the test input always takes both blocks."""

    def __init__(self, channels, repeat_b=1):
        super().__init__()
        self.a, self.b, self.repeat_b = Block(channels), Block(channels), repeat_b

    def forward(self, x):
        y = self.a(x)
        if float(y.abs().amax()) >= 0:
            for _ in range(self.repeat_b):
                y = self.b(y)
        return y


class Net(nn.Module):
    def __init__(self, repeat_b=1):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = Gate(16, repeat_b)
        self.head = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return self.head(self.gate(self.stem(x)))


def flop_counter_macs(module, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        output = module(x)
    return output, counter.get_total_flops() // 2


def octave_layers(module):
    return sorted(name for name, layer in module.named_modules() if isinstance(layer, OctConv2d)
                  and (layer.alpha_in or layer.alpha_out))


def test_children_of_an_untraceable_module_are_converted_with_plain_inputs_and_outputs():
    model = Net().eval()
    x = torch.randn(1, 3, 32, 32)
    conversion = octify.convert(model, 0.5, example_inputs=(x,))
    assert octave_layers(conversion.module.gate) == ["a.conv1", "a.conv2", "b.conv1", "b.conv2"]
    assert conversion.module.gate.a.conv1.alpha_out == 0.5  # its input is the child's input, yet not a stem
    expected, original_macs = flop_counter_macs(model, x)
    produced, converted_macs = flop_counter_macs(conversion.module, x)
    assert produced.shape == expected.shape
    assert (conversion.report.original.macs, conversion.report.converted.macs) == (original_macs, converted_macs)
    block = 16 * 16 * 9 * 32 * 32  # one 3x3 convolution of a block
    # each block's input is split (the residual add joins it to the output), both convolutions 7/16 of their MACs
    assert converted_macs == original_macs - 4 * block + 4 * block * 7 // 16
    notes = {note.name: note for note in conversion.notes}
    assert notes["gate"].kind == "leaf" and "gate.a.conv1" not in notes  # octave: no plain note
    assert not [name for name in notes if name.startswith("gate.") and notes[name].kind == "plain"]


def test_alpha_0_reproduces_a_model_with_a_converted_leaf_exactly():
    model = Net().eval()
    x = torch.randn(2, 3, 17, 23)
    with torch.no_grad():
        assert torch.equal(octify.convert(model, 0.0, example_inputs=(x,)).module(x), model(x))


def test_the_schedule_names_a_leafs_convolutions_by_their_full_names():
    conversion = octify.convert(Net().eval(), {"gate.b.*": 0, "*": 0.5}, input_shape=(1, 3, 32, 32))
    assert octave_layers(conversion.module.gate) == ["a.conv1", "a.conv2"]


def test_a_child_called_twice_stays_as_it_is_and_says_why():
    conversion = octify.convert(Net(repeat_b=2).eval(), 0.5, input_shape=(1, 3, 32, 32))
    notes = {note.name: note.reason for note in conversion.notes}
    assert notes["gate.b"] == "inside leaf gate, called 2 times, so it stays as it is"
    assert notes["gate.b.conv1"].startswith("inside leaf gate (not traceable")
    assert octave_layers(conversion.module.gate) == ["a.conv1", "a.conv2"]
    assert not octave_layers(Net(repeat_b=2).gate)  # the user's model is untouched
