"""Workstation side (torch): backbones, adaptation methods, episodic meta-training and export."""
