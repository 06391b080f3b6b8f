"""Triton kernels. Import lazily (through `video_mcmae.models.dwconv`): importing this package
decorates the kernels, and Triton decides at that moment whether they run compiled or under its
CPU interpreter (`TRITON_INTERPRET=1`)."""
