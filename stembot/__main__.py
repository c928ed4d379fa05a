from stembot.cli import main

raise SystemExit(main())
