from topo.console import main

main()
