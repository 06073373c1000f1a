from connector_sdk.cli import main

main()
