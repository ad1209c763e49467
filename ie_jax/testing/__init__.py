"""Reference implementations and fakes for tests and benchmarks: the PyTorch MoCo v3
reference (needs the torch extra) and the fault-injecting web server (`fault_server`)."""
