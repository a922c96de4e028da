from linclf.cli import main

main()
