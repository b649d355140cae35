from kleenenet.cli import main

main()
