from opos.cli import main

main()
