"""python -m sparsity_bench [overrides]: see sparsity_bench.cli."""
from sparsity_bench.cli import main

if __name__ == "__main__":
    main()
