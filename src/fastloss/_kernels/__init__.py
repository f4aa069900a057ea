"""Compiled kernels. Private: call them through the validated functions in :mod:`fastloss`."""
