from telebench.cli import main

main()
