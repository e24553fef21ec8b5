"""SharePoint / OneDrive drives through Microsoft Graph: `block.SharePointSource`."""
