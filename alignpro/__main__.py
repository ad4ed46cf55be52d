from alignpro.cli import main

raise SystemExit(main())
