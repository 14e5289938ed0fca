"""The checked graph → one nn.Module: compile, the module, artifacts."""
