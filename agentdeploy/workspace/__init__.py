"""The workspace: identities, tokens, OAuth, catalog and grants, secret scopes, SQL, audit."""
