from cxrnb.cli import main

main()
