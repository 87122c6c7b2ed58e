"""FastAPI server and its single static page; imported only by `xraylens serve`."""
