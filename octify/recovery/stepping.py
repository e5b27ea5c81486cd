"""``Stepper``: a GraphModule run on one batch node by node, pausing where asked (reconstruction, refinement)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, fx


class Stepper(fx.Interpreter):
    """Runs ``module`` on one batch, without gradients, up to a node and no further; values no later node reads
    are freed, so ``env`` holds exactly the values still live at that point."""

    def __init__(self, module: fx.GraphModule, batch: Tensor) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.args_iter = iter((batch,))
        self.nodes = list(module.graph.nodes)
        self.position = 0

    def run_until(self, stop: fx.Node) -> None:
        """Run every node before ``stop`` not yet run (``stop`` itself not)."""
        with torch.no_grad():
            while self.nodes[self.position] is not stop:
                node = self.nodes[self.position]
                self.env[node] = self.run_node(node)
                for dead in self.user_to_last_uses.get(node, []):
                    del self.env[dead]
                self.position += 1

    def peek(self, stop: fx.Node) -> Any:
        """Run every node before ``stop``, then ``stop``'s value, without keeping it (its module may change)."""
        self.run_until(stop)
        with torch.no_grad():
            return self.run_node(stop)
