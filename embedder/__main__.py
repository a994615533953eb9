from embedder.cli import main

raise SystemExit(main())
