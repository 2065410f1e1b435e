"""Containers: modules made of modules. They add the walk and nothing else."""

from pymodules.nn.module import Module, _now


class Container(Module):
    """A module holding an ordered list of children, ``modules``."""

    def __init__(self):
        super().__init__()
        self.modules = []

    def add(self, module):
        """Append ``module`` (not already in this tree); return self."""
        if not isinstance(module, Module):
            raise TypeError(f"{self}: can only add a Module, got {type(module).__name__}")
        if any(m is module for m in self.modules_preorder()) or \
                any(m is self for m in module.modules_preorder()):
            raise ValueError(f"{self.getName()}: {module.getName()} is already in this tree")
        self.modules.append(module)
        self._flat = None
        return self

    def children(self):
        return self.modules

    def _slots(self):
        for child in self.modules:
            yield from child._slots()

    def _child_error(self, err, child):
        """``err`` from ``child`` retold with this container's name in front of its path."""
        return type(err)(f"{self.getName()}/{err}")

    def getParametersTable(self):
        table = {}
        for child in self.modules:
            table.update(child.getParametersTable())
        return table

    def setScaleW(self, scale):
        super().setScaleW(scale)
        for child in self.modules:
            child.setScaleW(scale)
        return self

    def setScaleB(self, scale):
        super().setScaleB(scale)
        for child in self.modules:
            child.setScaleB(scale)
        return self

    def reset(self):
        for child in self.modules:
            child.reset()
        return self

    def __str__(self):
        lines = [f"{self.getName()} {{"]
        for i, child in enumerate(self.modules):
            body = str(child).replace("\n", "\n    ")
            lines.append(f"  ({i}): {body}")
        lines.append("}")
        return "\n".join(lines)

    __repr__ = __str__


class Sequential(Container):
    """Feeds each child's output to the next; the last one's output is the output."""

    def updateOutput(self, input):
        x = input
        child = None
        try:
            for child in self.modules:
                x = child.forward(x)
        except (TypeError, ValueError) as err:
            raise self._child_error(err, child) from err
        self.output = x
        return x

    def _walk_back(self, input, gradOutput, step):
        """Run ``step(child, childInput, gradOutput)`` from the last child to the first."""
        g = gradOutput
        child = None
        try:
            for i in range(len(self.modules) - 1, -1, -1):
                child = self.modules[i]
                g = step(child, self.modules[i - 1].output if i else input, g)
        except (TypeError, ValueError) as err:
            raise self._child_error(err, child) from err
        return g

    def backward(self, input, gradOutput):
        start = _now()
        self.gradInput = self._walk_back(input, gradOutput, _backward)
        self.backwardTime += _now() - start
        return self.gradInput

    def updateGradInput(self, input, gradOutput):
        self.gradInput = self._walk_back(input, gradOutput, _update_grad_input)
        return self.gradInput

    def accGradParameters(self, input, gradOutput):
        # Each child needs the gradient of its output, so gradInputs are computed on the way.
        self._walk_back(input, gradOutput, _acc_and_pass)

    def __str__(self):
        arrows = " -> ".join(f"({i})" for i in range(len(self.modules)))
        head = f"{self.getName()} {{\n  [input -> {arrows} -> output]" if self.modules \
            else f"{self.getName()} {{\n  [input -> output]"
        rest = super().__str__().split("\n", 1)[1]
        return f"{head}\n{rest}"

    __repr__ = __str__


def _backward(child, input, gradOutput):
    return child.backward(input, gradOutput)


def _update_grad_input(child, input, gradOutput):
    return child.updateGradInput(input, gradOutput)


def _acc_and_pass(child, input, gradOutput):
    child.accGradParameters(input, gradOutput)
    return child.gradInput
