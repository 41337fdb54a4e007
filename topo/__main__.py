from topo.entry import main

main()
