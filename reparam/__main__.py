from reparam.cli import main

main()
