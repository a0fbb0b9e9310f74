from curriculum_search.cli import main

raise SystemExit(main())
