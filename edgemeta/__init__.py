"""edgemeta: meta-train on a workstation, adapt to a user's own classes on the device.

- ``edgemeta.contract``: the bundle format and preprocessing (numpy + json).
- ``edgemeta.runtime``: the device runtime (numpy + onnxruntime, never torch).
- ``edgemeta.data``: class-grouped datasets, Omniglot splits, the episode sampler (numpy).
- ``edgemeta.train``: workstation meta-training and export (torch).
"""

__version__ = "0.1.0"
