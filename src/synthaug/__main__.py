from synthaug.cli import main

main()
