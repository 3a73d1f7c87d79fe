from mondrian.cli.main import main

raise SystemExit(main())
