<?php
/**
 * invoice-sync addon hooks: number an invoice when it is paid (proforma mode, the default) or
 * when it is created, before WHMCS mails its PDF.
 *
 * WHMCS loads this file on every page once the module is activated. Both hooks of the event
 * run: *PreEmail before the email goes out, the other also when no email is sent; the second
 * finds the number and does nothing.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/lib/numbering.php';

$invoiceSyncAddonSettings = null;
try {
    $invoiceSyncAddonSettings = invoice_sync_addon_settings();
} catch (Throwable $e) {
    // No database yet (installer) or the module not activated: register nothing.
}

if ($invoiceSyncAddonSettings !== null) {
    $invoiceSyncAddonEvents = $invoiceSyncAddonSettings['number_on'] === 'created'
        ? array('InvoiceCreationPreEmail', 'InvoiceCreated')
        : array('InvoicePaidPreEmail', 'InvoicePaid');
    foreach ($invoiceSyncAddonEvents as $invoiceSyncAddonEvent) {
        add_hook($invoiceSyncAddonEvent, 1, function ($vars) use ($invoiceSyncAddonSettings) {
            invoice_sync_addon_number($vars['invoiceid'], $invoiceSyncAddonSettings);
        });
    }
}
