"""Training on a machine without CUDA, for ViTPose's mmcv 1.3.x: what mmcv 1.4.4 added to
MMDataParallel (mmpose PR 1157). Without it, the model gets DataContainers it cannot read and
validation fails. Shipped by runner's registry table (`files`); `patches` makes train.py use it.
"""

from mmcv.parallel import MMDataParallel
from mmcv.parallel.scatter_gather import scatter_kwargs


class CPUDataParallel(MMDataParallel):
    """MMDataParallel with no devices: the batch is scattered to the CPU (target -1)."""

    def __init__(self, module, dim=0):
        super().__init__(module, device_ids=[], dim=dim)

    def _cpu(self, inputs, kwargs):
        inputs, kwargs = scatter_kwargs(inputs, kwargs, [-1], dim=self.dim)
        return inputs[0], kwargs[0]

    def forward(self, *inputs, **kwargs):
        inputs, kwargs = self._cpu(inputs, kwargs)
        return self.module(*inputs, **kwargs)

    def train_step(self, *inputs, **kwargs):
        inputs, kwargs = self._cpu(inputs, kwargs)
        return self.module.train_step(*inputs, **kwargs)

    def val_step(self, *inputs, **kwargs):
        inputs, kwargs = self._cpu(inputs, kwargs)
        return self.module.val_step(*inputs, **kwargs)
