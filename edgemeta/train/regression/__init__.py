"""Workstation side of regression bundles: an MLP feature map for vector inputs, the rules that adapt
a linear head over it from sufficient statistics (``alpaca``, ``metasgd``), meta-training on
sinusoid tasks, and export with parity gates. Needs torch; the device side is
:mod:`edgemeta.runtime.regressor`."""
