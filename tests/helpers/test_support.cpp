// placeholder: shared test builders are being written
