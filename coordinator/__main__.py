from coordinator.cli import main

main(prog_name="invoice-sync")
