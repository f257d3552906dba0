"""The ``cargoscan`` command line: training, enrollment, screening, enqueueing and results."""
