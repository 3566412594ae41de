from awgd.cli import main

raise SystemExit(main())
