<?php
// Just enough of WHMCS for the invoice-sync PHP (the addon module and the standalone hook):
// ROOTDIR, add_hook, localAPI('GetInvoice'), logActivity, decrypt, and Capsule (query builder
// + schema builder) over tables kept in a JSON file that stands for the database. Every query
// reads the file (under a lock) and every write rewrites it, so another process (the test,
// playing an admin or WHMCS itself) can change an invoice while the PHP waits for an answer.
// Query semantics follow Laravel's where/orderBy/limit/get.
namespace WHMCS\Database {
    class Builder
    {
        private $table;
        private $where = array();
        private $order = null;
        private $limit = null;

        public function __construct($table)
        {
            $this->table = $table;
            if (!array_key_exists($table, stub_db_tables())) {
                throw new \RuntimeException("Base table or view not found: $table");
            }
        }

        public function where($column, $op, $value = null)
        {
            if (func_num_args() === 2) {
                list($op, $value) = array('=', $op);
            }
            $this->where[] = array($column, $op, $value);
            return $this;
        }

        public function orderBy($column, $direction = 'asc')
        {
            $this->order = array($column, strtolower($direction));
            return $this;
        }

        public function limit($n)
        {
            $this->limit = $n;
            return $this;
        }

        public function matches($row)
        {
            foreach ($this->where as $w) {
                $equal = (string) $row[$w[0]] === (string) $w[2];
                if (($w[1] === '=' && !$equal) || (($w[1] === '!=' || $w[1] === '<>') && $equal)) {
                    return false;
                }
            }
            return true;
        }

        private function rows()
        {
            $all = stub_db_tables();
            $rows = array_values(array_filter($all[$this->table], array($this, 'matches')));
            if ($this->order !== null) {
                list($column, $direction) = $this->order;
                usort($rows, function ($a, $b) use ($column, $direction) {
                    $cmp = $a[$column] <=> $b[$column];
                    return $direction === 'desc' ? -$cmp : $cmp;
                });
            }
            return $this->limit === null ? $rows : array_slice($rows, 0, $this->limit);
        }

        public function get()
        {
            return array_map(function ($row) { return (object) $row; }, $this->rows());
        }

        public function exists()
        {
            return count($this->rows()) > 0;
        }

        public function value($column)
        {
            $rows = $this->rows();
            return $rows ? $rows[0][$column] : null;
        }

        public function max($column)
        {
            $values = array_column($this->rows(), $column);
            return $values ? max($values) : null;
        }

        public function update(array $values)
        {
            // One UPDATE ... WHERE is atomic in MySQL: read, match and write under one lock.
            $builder = $this;
            return stub_db_write(function (&$tables) use ($builder, $values) {
                $n = 0;
                foreach ($tables[$builder->name()] as $i => $row) {
                    if ($builder->matches($row)) {
                        $tables[$builder->name()][$i] = array_merge($row, $values);
                        $n++;
                    }
                }
                return $n;
            });
        }

        public function insert(array $values)
        {
            $table = $this->table;
            return stub_db_write(function (&$tables) use ($table, $values) {
                $rows = $tables[$table];
                $values['id'] = count($rows) ? max(array_column($rows, 'id')) + 1 : 1;
                $tables[$table][] = $values;
                return true;
            });
        }

        public function name()
        {
            return $this->table;
        }
    }

    class Column
    {
        public function __call($name, $args)
        {
            return $this; // ->index(), ->default(), ->nullable(): accepted, not modelled
        }
    }

    class Blueprint
    {
        public $columns = array();

        public function __call($type, $args)
        {
            $this->columns[] = array($type, isset($args[0]) ? $args[0] : null);
            return new Column();
        }
    }

    class SchemaBuilder
    {
        public function hasTable($name)
        {
            return array_key_exists($name, stub_db_tables());
        }

        public function create($name, $callback)
        {
            $blueprint = new Blueprint();
            $callback($blueprint);
            stub_db_write(function (&$tables) use ($name) {
                $tables[$name] = array();
            });
            $GLOBALS['STUB_SCHEMAS'][$name] = $blueprint->columns;
        }
    }

    class Capsule
    {
        public static function table($name)
        {
            return new Builder($name);
        }

        public static function schema()
        {
            return new SchemaBuilder();
        }
    }
}

namespace {
    define('WHMCS', true);
    // The repository's deploy/whmcs/ is laid out like a WHMCS root (modules/addons/…);
    // STUB_WHMCS_ROOT names another one, or "" for a WHMCS that does not define ROOTDIR.
    $stubRoot = getenv('STUB_WHMCS_ROOT');
    if ($stubRoot === false) {
        define('ROOTDIR', realpath(__DIR__ . '/../../../deploy/whmcs'));
    } elseif ($stubRoot !== '') {
        define('ROOTDIR', $stubRoot);
    }
    $GLOBALS['STUB_HOOKS'] = array();
    $GLOBALS['STUB_LOG'] = array();
    $GLOBALS['STUB_SCHEMAS'] = array();
    $GLOBALS['STUB_DB'] = null;     // path of the JSON file: {"tables": {...}, "race": {...}}
    $GLOBALS['STUB_RACE'] = array(); // invoice id => a number another writer sets after our read

    function stub_db_open($path)
    {
        $GLOBALS['STUB_DB'] = $path;
        $state = json_decode(file_get_contents($path), true);
        $GLOBALS['STUB_RACE'] = isset($state['race']) ? $state['race'] : array();
    }

    function stub_db_lock($mode)
    {
        $handle = fopen($GLOBALS['STUB_DB'] . '.lock', 'c');
        flock($handle, $mode);
        return $handle;
    }

    /** Return every table as it is in the "database" now. */
    function stub_db_tables()
    {
        $handle = stub_db_lock(LOCK_SH);
        $state = json_decode(file_get_contents($GLOBALS['STUB_DB']), true);
        flock($handle, LOCK_UN);
        fclose($handle);
        return $state['tables'];
    }

    /** Change the tables under an exclusive lock: $change(&$tables) returns the result. */
    function stub_db_write($change)
    {
        $handle = stub_db_lock(LOCK_EX);
        $state = json_decode(file_get_contents($GLOBALS['STUB_DB']), true);
        $result = $change($state['tables']);
        file_put_contents($GLOBALS['STUB_DB'], json_encode($state));
        flock($handle, LOCK_UN);
        fclose($handle);
        return $result;
    }

    function add_hook($event, $priority, $callback)
    {
        $GLOBALS['STUB_HOOKS'][$event][] = $callback;
    }

    function run_hook($event, array $vars)
    {
        foreach (isset($GLOBALS['STUB_HOOKS'][$event]) ? $GLOBALS['STUB_HOOKS'][$event] : array() as $cb) {
            $cb($vars);
        }
    }

    function logActivity($message)
    {
        $GLOBALS['STUB_LOG'][] = $message;
    }

    // WHMCS's CSRF protection of its admin area: generate_token() prints the admin session's
    // token ('form': a hidden input named "token", 'link': "&token=...", 'plain': the value);
    // check_token() stops the request with "Invalid CSRF Protection Token" unless the request
    // carries it. The stub stops by throwing StubRequestStopped, which run.php reports.
    define('STUB_CSRF_TOKEN', 'stub-admin-session-token');

    class StubRequestStopped extends Exception
    {
    }

    function generate_token($type = 'form')
    {
        if ($type === 'link') {
            return '&token=' . STUB_CSRF_TOKEN;
        }
        if ($type === 'plain') {
            return STUB_CSRF_TOKEN;
        }
        return '<input type="hidden" name="token" value="' . STUB_CSRF_TOKEN . '" />';
    }

    function check_token($namespace = 'WHMCS.default')
    {
        $sent = isset($_REQUEST['token']) ? (string) $_REQUEST['token'] : '';
        if (!hash_equals(STUB_CSRF_TOKEN, $sent)) {
            throw new StubRequestStopped('Invalid CSRF Protection Token');
        }
    }

    // WHMCS's decrypt() of a password-type setting; the tests store such values as "enc:" + token.
    function decrypt($value)
    {
        return strpos($value, 'enc:') === 0 ? substr($value, 4) : '';
    }

    function localAPI($command, array $values)
    {
        if ($command !== 'GetInvoice') {
            return array('result' => 'error', 'message' => 'Command Not Found');
        }
        $id = (int) $values['invoiceid'];
        foreach (stub_db_tables()['tblinvoices'] as $row) {
            if ((int) $row['id'] === $id) {
                // Another writer (an admin, the poller) numbers the invoice right after we read it.
                if (isset($GLOBALS['STUB_RACE'][$id])) {
                    $number = $GLOBALS['STUB_RACE'][$id];
                    \WHMCS\Database\Capsule::table('tblinvoices')->where('id', $id)
                        ->update(array('invoicenum' => $number));
                }
                return array_merge(array('result' => 'success', 'invoiceid' => $row['id']), $row);
            }
        }
        // WHMCS's exact answer for a missing invoice: "status", not "result" (WHMCS.md).
        return array('status' => 'error', 'message' => 'Invoice ID Not Found');
    }
}
