from embedder.cli.main import main

raise SystemExit(main())
