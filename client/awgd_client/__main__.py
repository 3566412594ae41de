from awgd_client.awgctl import main

raise SystemExit(main())
