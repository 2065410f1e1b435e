"""Graphs of modules built with ``inputs()``: ``Node``, ``Input`` and ``Graph`` (alias ``Model``).

    x = pm.Input(); y = pm.Input()
    h = pm.CAddTable()(pm.Linear(4, 3)(x), pm.Linear(4, 3)(y))
    model = pm.Graph([x, y], h)

The topological order is computed once, at construction, from the outputs back to the
inputs; nodes that reach no output are left out. Forward runs the nodes in that order;
backward runs them in reverse, summing the gradients of the consumers of a node.
"""

import numpy as np

from pymodules.nn.containers import Container
from pymodules.nn.module import Module, _postfix
from pymodules.nn.shape import Identity
from pymodules.nn.table import sum_into, zeros_like

_SOURCE, _ONE, _MANY = 0, 1, 2  # how a node is fed: graph input, one node, several nodes


class Node:
    """A module in a graph: ``element``, fed by ``prevNodes``, feeding ``nextNodes``."""

    def __init__(self, element, prevNodes=()):
        if not isinstance(element, Module):
            raise TypeError(f"a Node holds a Module, got {type(element).__name__}")
        if len(prevNodes) == 1 and isinstance(prevNodes[0], (list, tuple)):
            prevNodes = prevNodes[0]
        for p in prevNodes:
            if not isinstance(p, Node):
                hint = " (use forward() to run a module on arrays)" \
                    if isinstance(p, np.ndarray) else ""
                raise TypeError(f"{element.getName()}: inputs() takes graph nodes, "
                                f"got {type(p).__name__}{hint}")
        self.element = element
        self.prevNodes = list(prevNodes)
        self.nextNodes = []
        for p in self.prevNodes:
            p.nextNodes.append(self)

    def getName(self):
        return self.element.getName()

    def __repr__(self):
        return f"Node({self.element.getName()})"


class _InputLayer(Identity):
    """The element of an Input node: passes the graph input on."""

    def __init__(self):
        super().__init__()
        self._name = f"Input@{_postfix()}"  # a default name: hasName() stays False


class Input(Node):
    """A graph input node (its element is an identity module named ``Input@...``)."""

    def __init__(self, name=None):
        super().__init__(_InputLayer())
        if name is not None:
            self.element.setName(name)


def _node_list(nodes, what):
    nodes = list(nodes) if isinstance(nodes, (list, tuple)) else [nodes]
    if not nodes:
        raise ValueError(f"Graph: {what} is empty")
    for n in nodes:
        if not isinstance(n, Node):
            raise TypeError(f"Graph: {what} must be Nodes, got {type(n).__name__}")
    return nodes


def _topological(inputs, outputs):
    """The nodes between ``inputs`` and ``outputs``, each after its predecessors."""
    position = {}
    for j, n in enumerate(inputs):
        if id(n) in position:
            raise ValueError(f"Graph: {n.getName()} is given twice as an input")
        position[id(n)] = j
    state = {}  # id -> 1 while on the path being explored, 2 when placed
    order = []
    for root in outputs:
        if state.get(id(root)) == 2:
            continue
        state[id(root)] = 1
        stack = [(root, 0)]
        while stack:
            node, i = stack.pop()
            preds = () if id(node) in position else node.prevNodes
            if not preds and id(node) not in position:
                raise ValueError(f"Graph: {node.getName()} has no predecessor and is not an "
                                 f"input of the graph")
            if i < len(preds):
                stack.append((node, i + 1))
                p = preds[i]
                s = state.get(id(p))
                if s == 1:
                    raise ValueError(f"Graph: a cycle runs through {p.getName()} and "
                                     f"{node.getName()}")
                if s is None:
                    state[id(p)] = 1
                    stack.append((p, 0))
            else:
                state[id(node)] = 2
                order.append(node)
    for n in inputs:
        if state.get(id(n)) != 2:
            raise ValueError(f"Graph: input {n.getName()} reaches no output")
    return order, position


class Graph(Container):
    """A module made of a directed acyclic graph of nodes (BigDL's Graph, also ``Model``).

    One input node takes an array, several take a list in the order of ``inputs``; the same
    holds for outputs and for the gradients. A node with several predecessors receives the
    list of their outputs; the gradients from several consumers are summed.
    """

    _scratch = ("_sums", "_zeros")
    _persist = ("_stopped",)  # set by stopGradient

    def __init__(self, inputs, outputs):
        super().__init__()
        ins, outs = _node_list(inputs, "inputs"), _node_list(outputs, "outputs")
        order, position = _topological(ins, outs)
        elements, names = {}, {}
        for n in order:
            m, name = n.element, n.element.getName()
            if id(m) in elements:
                raise ValueError(f"Graph: {name} is in two nodes; a module may appear once "
                                 f"(make another instance)")
            if name in names:
                raise ValueError(f"Graph: two nodes are named {name!r}; node names must be "
                                 f"unique")
            elements[id(m)] = names[name] = n
        self._inputNodes, self._outputNodes, self._order = ins, outs, order
        self.modules = [n.element for n in order]
        index = {id(n): k for k, n in enumerate(order)}
        self._steps = []     # (element, how it is fed, from where)
        consumers = [[] for _ in order]  # per node: (consumer, entry or -1) or (-1, output j)
        for k, n in enumerate(order):
            if id(n) in position:
                self._steps.append((n.element, _SOURCE, position[id(n)]))
                continue
            preds = tuple(index[id(p)] for p in n.prevNodes)
            if len(preds) == 1:
                self._steps.append((n.element, _ONE, preds[0]))
                consumers[preds[0]].append((k, -1))
            else:
                self._steps.append((n.element, _MANY, preds))
                for i, p in enumerate(preds):
                    consumers[p].append((k, i))
        self._outIndex = [index[id(n)] for n in outs]
        for j, k in enumerate(self._outIndex):
            consumers[k].append((-1, j))
        self._consumers = [tuple(c) for c in consumers]
        self._inIndex = [index[id(n)] for n in ins]
        n_nodes = len(order)
        # Per node, cleared by clearState: the lists fed to nodes of several predecessors,
        # what each node was fed in the last forward, its output, its gradOutput in the
        # last backward and its gradInput (None: none passed on).
        for attr, value in self._cleared().items():
            if attr.startswith("_"):
                setattr(self, attr, value)
        self._sums = [None] * n_nodes
        self._zeros = None
        self._stopped = frozenset()
        self.output = [] if len(outs) > 1 else self.output
        self.gradInput = [] if len(ins) > 1 else self.gradInput

    def _cleared(self):
        n = len(self._steps)
        return {**super()._cleared(),
                "_lists": [[None] * len(s[2]) if s[1] == _MANY else None for s in self._steps],
                "_inputs": [None] * n, "_values": [None] * n, "_grads": [None] * n,
                "_gins": [None] * n}

    def add(self, module):
        raise TypeError(f"{self.getName()}: a Graph is built from nodes, not with add()")

    # -- forward ---------------------------------------------------------------------------
    def updateOutput(self, input):
        n_in = len(self._inIndex)
        if n_in > 1:
            if not isinstance(input, (list, tuple)):
                raise TypeError(f"{self.getName()}: expected a list of {n_in} inputs, got "
                                f"{type(input).__name__}")
            if len(input) != n_in:
                raise ValueError(f"{self.getName()}: got {len(input)} inputs, expected {n_in}")
        values, fed, lists = self._values, self._inputs, self._lists
        for k, (element, how, src) in enumerate(self._steps):
            if how == _ONE:
                x = values[src]
            elif how == _SOURCE:
                x = input[src] if n_in > 1 else input
            else:
                x = lists[k]
                for i, p in enumerate(src):
                    x[i] = values[p]
            fed[k] = x
            values[k] = element.forward(x)
        if len(self._outIndex) == 1:
            self.output = values[self._outIndex[0]]
        else:
            self.output = [values[k] for k in self._outIndex]
        return self.output

    # -- backward --------------------------------------------------------------------------
    def _gradient(self, k, gradOutput, gins):
        """The gradient of node k's output: its consumers' gradInputs, summed; None if none."""
        grads = []
        for c, i in self._consumers[k]:
            if c < 0:
                grads.append(gradOutput[i] if len(self._outIndex) > 1 else gradOutput)
            elif gins[c] is not None:
                grads.append(gins[c] if i < 0 else gins[c][i])
        if len(grads) > 1:
            if self._sums is None:  # dropped by clearState
                self._sums = [None] * len(self._consumers)
            g = self._sums[k] = sum_into(self._sums[k], grads)
            return g
        return grads[0] if grads else None

    def _walk_back(self, input, gradOutput, step):
        n_out = len(self._outIndex)
        if n_out > 1:
            if not isinstance(gradOutput, (list, tuple)) or len(gradOutput) != n_out:
                raise ValueError(f"{self.getName()}: gradOutput must be a list of {n_out} "
                                 f"arrays, one per output")
        gins, grads, fed, stopped = self._gins, self._grads, self._inputs, self._stopped
        if fed and fed[-1] is None:
            raise ValueError(f"{self.getName()}: backward before forward: forward must run "
                             f"first (each node's backward reads what it was fed)")
        for k in range(len(self._steps) - 1, -1, -1):
            element = self._steps[k][0]
            g = grads[k] = self._gradient(k, gradOutput, gins)
            if g is None:
                gins[k] = None
                continue
            gi = step(element, fed[k], g)
            gins[k] = None if k in stopped else gi
        return self._grad_input(input)

    def _grad_input(self, input):
        n_in = len(self._inIndex)
        result = []
        for j, k in enumerate(self._inIndex):
            g = self._gins[k]
            if g is None:  # no gradient reaches this input: it is zero
                x = input[j] if n_in > 1 else input
                zeros = self._zeros = self._zeros or [None] * n_in
                g = zeros[j] = zeros_like(zeros[j], x)
            result.append(g)
        if n_in == 1:
            return result[0]
        out = self.gradInput if isinstance(self.gradInput, list) else []
        out[:] = result
        return out

    def accGradParameters(self, input, gradOutput):
        # Uses each node's gradOutput from the updateGradInput that preceded.
        for k in range(len(self._steps) - 1, -1, -1):
            element = self._steps[k][0]
            if self._grads[k] is not None:
                element.accGradParameters(self._inputs[k], self._grads[k])

    # -- graph API -------------------------------------------------------------------------
    def node(self, name):
        """The node whose module is named ``name``."""
        for n in self._order:
            if n.element.getName() == name:
                return n
        raise ValueError(f"{self.getName()}: no node named {name!r}")

    def stopGradient(self, names):
        """Stop the gradient at the named nodes: they still accumulate their parameter
        gradients, but pass nothing to their predecessors. Replaces the previous set."""
        names = [names] if isinstance(names, str) else list(names)
        index = {id(n): k for k, n in enumerate(self._order)}
        self._stopped = frozenset(index[id(self.node(name))] for name in names)
        return self

    def freeze(self, *names):
        """Freeze the named nodes' modules (a list of names works too; none: all)."""
        if len(names) == 1 and isinstance(names[0], (list, tuple)):
            names = tuple(names[0])
        return super().freeze(*names)

    def unFreeze(self, *names):
        if len(names) == 1 and isinstance(names[0], (list, tuple)):
            names = tuple(names[0])
        return super().unFreeze(*names)

    def __str__(self):
        lines = [f"{self.getName()} {{"]
        index = {id(n): k for k, n in enumerate(self._order)}
        for k, n in enumerate(self._order):
            preds = ", ".join(f"({index[id(p)]})" for p in n.prevNodes if id(p) in index)
            body = str(n.element).replace("\n", "\n    ")
            lines.append(f"  ({k}): {body}" + (f" <- {preds}" if preds and
                                                  self._steps[k][1] != _SOURCE else ""))
        lines.append("}")
        return "\n".join(lines)

    __repr__ = __str__


Model = Graph

