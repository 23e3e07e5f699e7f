"""External test sets: evaluate every fold's model on further datasets."""
