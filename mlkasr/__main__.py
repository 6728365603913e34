from mlkasr.cli import main

raise SystemExit(main())
